"""``python -m prep`` and the ``prep`` console script."""

from prep.signals import exit_on_sigint


def main() -> None:
    """Run the command line; a Ctrl-C while it loads exits 130 with one line."""
    exit_on_sigint()
    from prep.cli import run

    run()


if __name__ == "__main__":
    main()
