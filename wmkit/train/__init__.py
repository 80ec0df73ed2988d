"""Recipes that produce what ships in weights/ (run as `python -m wmkit.train.NAME`)."""
