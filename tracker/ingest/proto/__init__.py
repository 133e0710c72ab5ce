"""Generated TensorBoard protos (package ``tracker_tb``); see README.md. Regenerate with regenerate.sh."""
