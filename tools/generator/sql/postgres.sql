CREATE TABLE calls (
    event_source     text        NOT NULL,
    event_ref        uuid        PRIMARY KEY,
    event_type       smallint    NOT NULL CHECK (event_type IN (1, 2, 3, 5)),
    event_date       timestamptz NOT NULL,
    calling_number   bigint      NOT NULL,
    called_number    bigint      NOT NULL,
    location         text        NOT NULL,
    duration_seconds integer     NOT NULL CHECK (duration_seconds >= 0),
    attr_1           text,
    attr_2           text,
    attr_3           text,
    attr_4           text,
    attr_5           text,
    attr_6           text,
    attr_7           text,
    attr_8           text
);
