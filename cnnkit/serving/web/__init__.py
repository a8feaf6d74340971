"""Static files of the web page served at /."""
