"""Reports over deliveries and events: campaign performance, a subscriber's history, trends."""
