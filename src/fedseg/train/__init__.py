"""One site's training: patches, augmentation, loader, the local round, validation."""
