"""Building blocks under the recipes: session, training state and best-epoch selection,
checkpoints, losses (Eq. 3-8, 15), partition (Eq. 9-13), curriculum (Eq. 14), metrics, stats."""
