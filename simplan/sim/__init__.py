"""The discrete-event simulator: a parallel configuration's training step, event by event."""
