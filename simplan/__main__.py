from simplan.cli import entry

entry()
