"""Lab stand-ins for docker / docker-compose and the iconloop/icon2-node image, as .debs."""
