SELECT nextval(s.seq) AS "id!" FROM
    (SELECT pg_get_serial_sequence('contact', 'id')::regclass AS seq) s, generate_series(1, $1::int)
