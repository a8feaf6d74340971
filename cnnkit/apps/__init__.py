"""Applications built on cnnkit."""
