"""Facts about container images read over the OCI distribution API: manifest, config and only the layers that
hold what is wanted, streamed and cached by digest. No Docker engine and no pull (DESIGN: "Facts about images")."""
