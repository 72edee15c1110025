"""``python -m prep``: the command line."""

if __name__ == "__main__":
    from .cli import run

    run()
