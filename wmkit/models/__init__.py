"""Small networks wmkit trains and ships, and loaders for real checkpoints."""
