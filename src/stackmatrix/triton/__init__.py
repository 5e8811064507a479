"""The Triton driver: model repositories (config.pbtxt, model.json), a tritonserver process in explicit model
control, and a client for its repository, health, generate and metrics endpoints."""
