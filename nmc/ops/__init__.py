"""Operating nmc: config files (`config`), the broker (`broker`), certificates (`pki`), running daemons (`daemon`) and fleet tooling (`fleet`)."""
