"""Autoencoder embeddings: one latent vector per image, so that similar images lie close.

DDS-NAS swaps an easy image for the same-class image furthest from it in this latent space.
``train_autoencoder`` / ``encode`` work on arrays; ``embed_dataset`` does the whole step for a
stored dataset (train on its train split, embed every split, save the latents as Parquet, report
how well they group same-class images against raw pixels, and for detection data how well they
group images with the same objects). Kinds are registered in ``AUTOENCODERS`` under their config
names (``plain``, ``triplet``, ``attention``: detection data only).
"""
from frugalnas.embed.autoencoder import (
    AUTOENCODERS, Autoencoder, PlainAutoencoder, TripletAutoencoder, batch_all_triplet_loss,
    batch_hard_triplet_loss)
from frugalnas.embed.attention import AttentionAutoencoder, box_masks
from frugalnas.embed.latents import embed_dataset, load_latents, save_latents
from frugalnas.embed.quality import knn_agreement, pixel_vectors
from frugalnas.embed.training import encode, prepare_images, train_autoencoder

__all__ = [
    "AUTOENCODERS", "AttentionAutoencoder", "Autoencoder", "PlainAutoencoder", "TripletAutoencoder",
    "batch_all_triplet_loss", "batch_hard_triplet_loss", "box_masks", "embed_dataset", "encode", "knn_agreement", "load_latents",
    "pixel_vectors", "prepare_images", "save_latents", "train_autoencoder",
]
