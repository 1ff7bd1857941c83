"""Fleet tooling: the embedded dev fleet (`dev`), the simulator (`simulate`) and systemd units (`systemd`)."""
