"""What every experiment shares: data order, command line, JSON, the machine."""
