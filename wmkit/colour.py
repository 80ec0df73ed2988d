"""Colour constants the readers share."""

# ITU-R BT.601 luma weights of R, G, B: JPEG's Y channel, the one it keeps at full resolution
LUMA = (0.299, 0.587, 0.114)
