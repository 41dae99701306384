CREATE TABLE calls (
    event_source     TEXT    NOT NULL,
    event_ref        TEXT    NOT NULL PRIMARY KEY,
    event_type       INTEGER NOT NULL CHECK (event_type IN (1, 2, 3, 5)),
    event_date       TEXT    NOT NULL,
    calling_number   INTEGER NOT NULL,
    called_number    INTEGER NOT NULL,
    location         TEXT    NOT NULL,
    duration_seconds INTEGER NOT NULL CHECK (duration_seconds >= 0),
    attr_1           TEXT,
    attr_2           TEXT,
    attr_3           TEXT,
    attr_4           TEXT,
    attr_5           TEXT,
    attr_6           TEXT,
    attr_7           TEXT,
    attr_8           TEXT
);
