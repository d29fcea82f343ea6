SELECT key, digest FROM processed_event WHERE kind = 'event' AND key = ANY($1)
