"""`quaymaster config <password>`: the config editor (form, validators, bundle download)."""
