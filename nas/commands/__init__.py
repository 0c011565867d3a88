"""One module per `nas` subcommand (see nas.cli). Keep top-level imports to the standard library."""
