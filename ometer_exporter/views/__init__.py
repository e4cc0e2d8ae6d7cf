"""Views: everything the exporter shows, each made from one store snapshot."""
