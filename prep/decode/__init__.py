"""Decoding: an encoded image file -> the pixels to reduce (PIL, torchvision.io, the device path, JPEG kinds)."""
