"""The site, the JSON API and the staff dashboard: what people and programs see."""
