SELECT hash FROM suppression WHERE hash = ANY($1)
