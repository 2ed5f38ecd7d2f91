"""Running the whole product on one machine: a private Redis, the API and a worker."""
