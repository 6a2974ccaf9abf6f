"""A seeded synthetic farmland seen from the air on two dates: the world of the demo and tests."""
