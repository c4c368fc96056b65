"""sockmon's engine: targets (what to watch and how to connect) and watches (what to do when
a server dies). The applet module hamtools.applets.sockmon is the command line over it."""
