"""Framework integrations: `integrations.keras.TrackerCallback` and
`integrations.torch.SummaryWriter`. Importing them never requires the framework itself."""
