"""One thin module per applet; each exports main(argv) -> int (argv without the applet name)."""
