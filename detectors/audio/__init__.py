"""Audio: decoding (io), augmentation (transforms), breath cues (breath), demo data (demo), datasets
(data) and the BreathNet detector (breathnet; imported lazily through the registry)."""
