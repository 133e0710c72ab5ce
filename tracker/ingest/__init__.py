"""Pure (Django-free) TensorBoard ingest: TFRecord framing, summary decoding, run discovery."""
