"""Built-in watermarkers; importing this package registers them."""
