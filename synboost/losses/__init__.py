"""Losses (GAN, PEBAL, weighted cross-entropy) arrive with their stages."""
