"""Training and probe data: procedural shapes and faces with known factors, and Fashion-MNIST."""
