"""The trainer, its compiled steps, resumable state, tf.distribute strategies, run directories and tuning."""
