"""Pure OCI/Docker image-format rules, kept free of I/O so every layer can share them."""
