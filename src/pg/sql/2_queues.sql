-- Schema version 2: topics and their messages, subscriptions' committed
-- offsets, worker groups and their jobs (docs/POSTGRES.md, "Queues and the
-- log"). `tg.` is replaced by the configured schema's name before this runs.
--
-- Every function is one operation and never commits: the backend calls each
-- in its own transaction (autocommit), and `tg.publish` may also run inside
-- a caller's transaction (the outbox), committing or rolling back with it.
-- Functions that change rows take `p_autocommit`: true only when the call is
-- its own transaction, so that a topic that is not `Sync` may commit it
-- without waiting for the WAL flush (synchronous_commit off, transaction
-- local). A caller's transaction keeps its own commit settings.
--
-- Times are the server's (clock_timestamp()), except a message's delivery
-- time, which is the publisher's wall clock, as the embedded log keeps it.
-- Times go in and out as microseconds since the Unix epoch (bigint).
--
-- Locks, in the order they are taken:
-- - a topic's row: publishers update its next_offset and hold it until they
--   commit, which serializes them; opening a worker group updates it too (so
--   its backfill and the publishes that insert its jobs neither overlap nor
--   leave a gap), and the cleanup locks it (skipping a topic held now);
-- - job rows: a receive takes them with SKIP LOCKED; a settle locks its one;
-- - a dead-letter topic's row, when a job is dead-lettered (a publish).

-- A topic. next_offset is the offset its next message gets; oldest is its
-- oldest retained one: the messages are exactly [oldest, next_offset).
-- durability: 0 buffered, 1 interval (flush_interval_ms), 2 sync.
-- retention_ms, retention_messages: the cleanup deletes messages older than
-- this, or further than this behind the end (NULL: no such limit).
CREATE TABLE tg.topic (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (octet_length(name) BETWEEN 1 AND 255),
    next_offset bigint NOT NULL DEFAULT 0,
    oldest bigint NOT NULL DEFAULT 0,
    durability smallint NOT NULL CHECK (durability IN (0, 1, 2)),
    flush_interval_ms bigint CHECK (flush_interval_ms > 0),
    max_message_bytes integer NOT NULL CHECK (max_message_bytes > 0),
    retention_ms bigint CHECK (retention_ms > 0),
    retention_messages bigint CHECK (retention_messages > 0),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A topic's messages. A message has a key or none (NULL; an empty key is
-- none), a priority for workers (0 to 9), a delivery time for workers
-- (not_before), and headers: names and values in the order they were added
-- (names may repeat). No foreign key to the topic: publishing is the hot
-- path, and only tg.publish and tg.dead_letter insert rows.
CREATE TABLE tg.message (
    topic integer NOT NULL,
    "offset" bigint NOT NULL,
    key text CHECK (octet_length(key) BETWEEN 1 AND 1024),
    priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    not_before timestamptz,
    published_at timestamptz NOT NULL,
    header_names text[] NOT NULL DEFAULT '{}',
    header_values bytea[] NOT NULL DEFAULT '{}',
    payload bytea NOT NULL,
    PRIMARY KEY (topic, "offset"),
    CHECK (cardinality(header_names) = cardinality(header_values))
);

-- A consumer group's committed offset in a topic (subscriptions): it only
-- moves forward.
CREATE TABLE tg.consumer (
    topic integer NOT NULL REFERENCES tg.topic ON DELETE CASCADE,
    "group" text NOT NULL,
    committed bigint NOT NULL CHECK (committed >= 0),
    committed_at timestamptz NOT NULL,
    PRIMARY KEY (topic, "group")
);

-- The regular expression (PostgreSQL's advanced syntax) that matches a key,
-- as tg.key_matches writes it, exactly when the routing-key pattern
-- p_pattern (KeyPattern: words separated by '.'; '*' is one word, '#' zero
-- or more) matches the key. A key of n words is written as '.' before each
-- word (the empty key has no words), so a word is '\.[^.]*' and the
-- pattern's words translate one by one. NULL for a NULL pattern.
CREATE FUNCTION tg.key_regex(p_pattern text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    word text;
    re text := '^';
BEGIN
    IF p_pattern <> '' THEN
        FOREACH word IN ARRAY string_to_array(p_pattern, '.') LOOP
            IF word = '*' THEN
                re := re || E'\\.[^.]*';
            ELSIF word = '#' THEN
                re := re || E'(?:\\.[^.]*)*';
            ELSIF strpos(word, '*') > 0 OR strpos(word, '#') > 0 THEN
                RAISE EXCEPTION 'key pattern %: ''*'' and ''#'' must be whole words', p_pattern
                    USING ERRCODE = '22023';
            ELSE
                -- Every character the syntax gives a meaning to, escaped.
                re := re || E'\\.' || regexp_replace(word, E'([\\\\^$.|?*+()\\[\\]{}])', E'\\\\\\1', 'g');
            END IF;
        END LOOP;
    END IF;
    RETURN re || '$';
END
$$;

-- Whether a message with key p_key (NULL: none) matches the regular
-- expression p_regex from tg.key_regex (NULL: every key matches).
CREATE FUNCTION tg.key_matches(p_regex text, p_key text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_regex IS NULL
        OR (CASE WHEN coalesce(p_key, '') = '' THEN '' ELSE '.' || p_key END) COLLATE "C" ~ p_regex
$$;

-- A worker group: competing workers sharing the topic's messages through
-- one job row per message that is the group's (its filter matched when the
-- job was inserted). Dead letters go to the topic dead_letter.
CREATE TABLE tg.work_group (
    id serial PRIMARY KEY,
    topic integer NOT NULL REFERENCES tg.topic ON DELETE CASCADE,
    name text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 248),
    filter text,
    filter_regex text GENERATED ALWAYS AS (tg.key_regex(filter)) STORED,
    dead_letter integer NOT NULL REFERENCES tg.topic,
    max_attempts integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 1000),
    visibility_ms bigint NOT NULL CHECK (visibility_ms BETWEEN 1 AND 43200000),
    -- The first offset the group was created with jobs for.
    start_offset bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (topic, name),
    CHECK (dead_letter <> topic)
);

-- A message not yet settled by a worker group. state: 0 ready (visible
-- since visible_at), 1 delayed (a delivery time or a nack's retry, until
-- visible_at), 2 in flight (delivery `receipt`, until visible_at). A
-- receive first makes ready every delayed or in-flight job whose time came,
-- then claims the best ready ones. attempts counts deliveries; last_error
-- is why the last one failed (for the dead letter). priority is the
-- message's, here for the claim's index. Settled jobs are deleted. No
-- foreign keys: jobs are the hot path.
CREATE TABLE tg.job (
    work_group integer NOT NULL,
    "offset" bigint NOT NULL,
    priority smallint NOT NULL,
    state smallint NOT NULL CHECK (state IN (0, 1, 2)),
    visible_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    receipt bigint,
    last_error text,
    PRIMARY KEY (work_group, "offset")
);
-- The claim: ready jobs, highest priority first, then oldest.
CREATE INDEX job_ready ON tg.job (work_group, priority DESC, "offset") WHERE state = 0;
-- Delayed and in-flight jobs, by the time they become visible.
CREATE INDEX job_waiting ON tg.job (work_group, visible_at) WHERE state <> 0;

-- Receipts: each delivery gets a new one, so that a worker whose
-- visibility ran out cannot settle a later delivery of the same message.
CREATE SEQUENCE tg.receipt;

-- A time as microseconds since the Unix epoch, and back.
CREATE FUNCTION tg.to_us(p_at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (extract(epoch FROM p_at) * 1000000)::bigint
$$;
CREATE FUNCTION tg.from_us(p_us bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT timestamptz 'epoch' + p_us * interval '1 microsecond'
$$;

-- p_text cut to at most p_max bytes, at a character boundary.
CREATE FUNCTION tg.truncate_bytes(p_text text, p_max integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    cut text := left(p_text, p_max);
BEGIN
    -- A character is 1 to 4 bytes: dropping a quarter of the excess, in
    -- characters, never drops too much.
    WHILE octet_length(cut) > p_max LOOP
        cut := left(cut, -greatest(1, (octet_length(cut) - p_max) / 4));
    END LOOP;
    RETURN cut;
END
$$;

-- Commits this transaction without waiting for the WAL flush if it is the
-- call's own (p_autocommit) and p_topic is not a Sync topic.
CREATE FUNCTION tg.relax(p_topic integer, p_autocommit boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_autocommit AND (SELECT t.durability FROM tg.topic t WHERE t.id = p_topic) <> 2 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

-- The topic p_name; if p_create and it does not exist, created with these
-- settings (the durability and the rest as tg.topic describes them).
--   outcome 0: created; 1: it existed (with the settings returned, which
--              may differ from these); 2: no such topic (not p_create)
CREATE FUNCTION tg.open_topic(
    p_name text, p_create boolean, p_durability smallint, p_flush_interval_ms bigint, p_max_message_bytes integer,
    p_retention_ms bigint, p_retention_messages bigint,
    OUT outcome smallint, OUT id integer, OUT durability smallint, OUT flush_interval_ms bigint,
    OUT max_message_bytes integer, OUT retention_ms bigint, OUT retention_messages bigint, OUT oldest bigint,
    OUT next_offset bigint
)
LANGUAGE plpgsql AS $$
BEGIN
    outcome := 1;
    IF p_create THEN
        INSERT INTO tg.topic (name, durability, flush_interval_ms, max_message_bytes, retention_ms, retention_messages)
        VALUES (p_name, p_durability, p_flush_interval_ms, p_max_message_bytes, p_retention_ms, p_retention_messages)
        ON CONFLICT (name) DO NOTHING;
        IF FOUND THEN
            outcome := 0;
        END IF;
    END IF;
    SELECT t.id, t.durability, t.flush_interval_ms, t.max_message_bytes, t.retention_ms, t.retention_messages,
           t.oldest, t.next_offset
    INTO id, durability, flush_interval_ms, max_message_bytes, retention_ms, retention_messages, oldest, next_offset
    FROM tg.topic t WHERE t.name = p_name;
    IF NOT FOUND THEN
        outcome := 2;
    END IF;
END
$$;

-- The topic's retained messages, [oldest, next_offset) (NULLs: no such topic).
CREATE FUNCTION tg.topic_bounds(p_topic integer, OUT oldest bigint, OUT next_offset bigint)
LANGUAGE sql STABLE AS $$
    SELECT t.oldest, t.next_offset FROM tg.topic t WHERE t.id = p_topic
$$;

-- Inserts, for messages [p_from, p_to) of p_topic, a job in each worker
-- group of the topic (only p_group if not NULL) whose filter matches, and
-- wakes the topic's waiters when the transaction commits: a NOTIFY on
-- channel tg.topic with the topic's id.
CREATE FUNCTION tg.enqueue(p_topic integer, p_from bigint, p_to bigint, p_group integer, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
BEGIN
    INSERT INTO tg.job (work_group, "offset", priority, state, visible_at)
    SELECT g.id, m."offset", m.priority,
           CASE WHEN m.not_before > p_now THEN 1 ELSE 0 END,
           greatest(p_now, m.not_before)
    FROM tg.work_group g
    JOIN tg.message m ON m.topic = g.topic AND m."offset" >= p_from AND m."offset" < p_to
    WHERE g.topic = p_topic AND (p_group IS NULL OR g.id = p_group) AND tg.key_matches(g.filter_regex, m.key)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    PERFORM pg_notify('tg.topic', p_topic::text);
    RETURN inserted;
END
$$;

-- Publishes a batch of messages to p_topic, atomically, at dense offsets
-- first_offset .. first_offset + count - 1, in the order given. Message i
-- (1-based) has key p_keys[i] (NULL or '': none), priority p_priorities[i],
-- delivery time p_not_before_us[i] (NULL: none) and payload p_payloads[i];
-- header j is (p_header_names[j], p_header_values[j]) of message
-- p_header_of[j], in order. Every worker group of the topic whose filter
-- matches gets a job per message.
--
-- The offsets come from the topic's row, updated in this transaction: it
-- stays locked until the transaction ends, so publishers of a topic commit
-- one after the other, a rollback gives its offsets back, and a reader never
-- sees an offset appear below one it has seen. Inside a caller's
-- transaction (the outbox) the row stays locked until the caller commits:
-- make it the transaction's last statement. Safe in READ COMMITTED (each
-- statement after the update sees what committed before it); in REPEATABLE
-- READ or SERIALIZABLE a concurrent publish or a new worker group fails it
-- with a serialization error (40001), to be retried.
--
-- first_offset is NULL if there is no such topic; count is 0 then, and for
-- an empty batch (first_offset is then the topic's end).
CREATE FUNCTION tg.publish(
    p_topic integer, p_keys text[], p_priorities smallint[], p_not_before_us bigint[], p_payloads bytea[],
    p_header_of integer[], p_header_names text[], p_header_values bytea[], p_autocommit boolean DEFAULT false,
    OUT first_offset bigint, OUT count integer
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_payloads), 0);
    now_ timestamptz;
BEGIN
    count := 0;
    IF n = 0 THEN
        SELECT t.next_offset INTO first_offset FROM tg.topic t WHERE t.id = p_topic;
        RETURN;
    END IF;
    IF coalesce(cardinality(p_keys), 0) <> n OR coalesce(cardinality(p_priorities), 0) <> n
       OR coalesce(cardinality(p_not_before_us), 0) <> n
       OR coalesce(cardinality(p_header_of), 0) <> coalesce(cardinality(p_header_names), 0)
       OR coalesce(cardinality(p_header_of), 0) <> coalesce(cardinality(p_header_values), 0) THEN
        RAISE EXCEPTION 'publish: the arrays of a batch differ in length' USING ERRCODE = '22023';
    END IF;
    UPDATE tg.topic t SET next_offset = t.next_offset + n WHERE t.id = p_topic
    RETURNING t.next_offset - n INTO first_offset;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Taken under the row lock: publish times follow offsets.
    now_ := clock_timestamp();
    INSERT INTO tg.message (topic, "offset", key, priority, not_before, published_at, header_names, header_values, payload)
    SELECT p_topic, first_offset + m.i - 1, nullif(m.key, ''), coalesce(m.priority, 0), tg.from_us(m.nb), now_,
           coalesce(h.names, '{}'), coalesce(h.vals, '{}'), m.payload
    FROM unnest(p_keys, p_priorities, p_not_before_us, p_payloads) WITH ORDINALITY AS m (key, priority, nb, payload, i)
    LEFT JOIN (
        SELECT x.msg, array_agg(x.name ORDER BY x.j) AS names, array_agg(x.val ORDER BY x.j) AS vals
        FROM unnest(p_header_of, p_header_names, p_header_values) WITH ORDINALITY AS x (msg, name, val, j)
        GROUP BY x.msg
    ) h ON h.msg = m.i;
    PERFORM tg.enqueue(p_topic, first_offset, first_offset + n, NULL, now_);
    PERFORM tg.relax(p_topic, p_autocommit);
    count := n;
END
$$;

-- Up to p_max messages of p_topic from offset p_from on, in offset order,
-- from one snapshot: the retained messages are dense, so they are exactly
-- p_from, p_from + 1, ... Every row also says the topic's bounds. When no
-- message is returned (p_from is at or past the end, or below the oldest
-- retained offset), one row without an offset says the bounds alone. No
-- row: no such topic.
CREATE FUNCTION tg.read(p_topic integer, p_from bigint, p_max integer)
RETURNS TABLE (
    "offset" bigint, key text, priority smallint, not_before_us bigint, published_us bigint, header_names text[],
    header_values bytea[], payload bytea, oldest bigint, next_offset bigint
)
LANGUAGE sql STABLE AS $$
    WITH t AS (
        SELECT t.oldest, t.next_offset FROM tg.topic t WHERE t.id = p_topic
    ), m AS (
        SELECT m."offset", m.key, m.priority, tg.to_us(m.not_before) AS not_before_us,
               tg.to_us(m.published_at) AS published_us, m.header_names, m.header_values, m.payload
        FROM tg.message m, t
        WHERE m.topic = p_topic AND m."offset" >= p_from AND p_from >= t.oldest
        ORDER BY m."offset"
        LIMIT p_max
    )
    SELECT * FROM (
        SELECT m.*, t.oldest, t.next_offset FROM m, t
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t.oldest, t.next_offset
        FROM t WHERE NOT EXISTS (SELECT 1 FROM m)
    ) r
    ORDER BY r."offset" NULLS LAST
$$;

-- Where consumer group p_group of p_topic reads from: its committed offset
-- (committed, NULL if it never committed), or without one the oldest
-- retained offset, or with p_latest the end. NULLs: no such topic.
CREATE FUNCTION tg.subscription_start(
    p_topic integer, p_group text, p_latest boolean,
    OUT start bigint, OUT committed bigint, OUT oldest bigint, OUT next_offset bigint
)
LANGUAGE sql STABLE AS $$
    SELECT CASE
               WHEN c.committed IS NOT NULL THEN least(c.committed, t.next_offset)
               WHEN p_latest THEN t.next_offset
               ELSE t.oldest
           END,
           c.committed, t.oldest, t.next_offset
    FROM tg.topic t LEFT JOIN tg.consumer c ON c.topic = t.id AND c."group" = p_group
    WHERE t.id = p_topic
$$;

-- Commits offset p_offset for consumer group p_group of p_topic: the group
-- has processed every message before it. The committed offset never moves
-- back: a stale commit changes nothing.
--   status 0: committed is the group's committed offset now
--   status 1: p_offset is past the topic's end (committed is the end)
--   status 2: no such topic
CREATE FUNCTION tg.commit_offset(
    p_topic integer, p_group text, p_offset bigint, OUT status smallint, OUT committed bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    end_ bigint;
BEGIN
    SELECT t.next_offset INTO end_ FROM tg.topic t WHERE t.id = p_topic;
    IF NOT FOUND THEN
        status := 2;
        RETURN;
    END IF;
    IF p_offset > end_ THEN
        status := 1;
        committed := end_;
        RETURN;
    END IF;
    INSERT INTO tg.consumer AS c (topic, "group", committed, committed_at)
    VALUES (p_topic, p_group, p_offset, clock_timestamp())
    ON CONFLICT (topic, "group") DO UPDATE
        SET committed = greatest(c.committed, EXCLUDED.committed), committed_at = EXCLUDED.committed_at
    RETURNING c.committed INTO committed;
    status := 0;
END
$$;

-- The committed offset of consumer group p_group of p_topic (NULL: none).
CREATE FUNCTION tg.committed_offset(p_topic integer, p_group text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT c.committed FROM tg.consumer c WHERE c.topic = p_topic AND c."group" = p_group
$$;

-- Opens worker group p_name of p_topic, creating it if needed, with these
-- settings: filter (a KeyPattern as written; NULL: every message),
-- dead-letter topic (NULL: '<topic>.dlq'; created if missing, like the
-- topic but without retention and with 4 KiB more room per message), most
-- attempts, and visibility timeout. A new group gets a job for every
-- retained message that its filter matches (none with p_latest); from then
-- on every publish inserts its jobs, so reopening never adds any: what the
-- group settled stays settled. Reopening with other settings changes them:
-- they apply to receives and settles from now on, and a new filter to the
-- messages published from now on.
--   outcome 0: created, with `backfilled` jobs
--   outcome 1: opened, its settings were these already
--   outcome 2: opened, its settings changed to these
--   outcome 3: no such topic
--   outcome 4: the dead-letter topic would be the topic itself
CREATE FUNCTION tg.open_work_group(
    p_topic integer, p_name text, p_filter text, p_dead_letter text, p_max_attempts integer, p_visibility_ms bigint,
    p_latest boolean,
    OUT outcome smallint, OUT id integer, OUT dead_letter integer, OUT backfilled bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    t tg.topic%ROWTYPE;
    g tg.work_group%ROWTYPE;
    dead_letter_name text;
    start_ bigint;
BEGIN
    backfilled := 0;
    SELECT * INTO t FROM tg.topic x WHERE x.id = p_topic;
    IF NOT FOUND THEN
        outcome := 3;
        RETURN;
    END IF;
    dead_letter_name := coalesce(p_dead_letter, t.name || '.dlq');
    IF dead_letter_name = t.name THEN
        outcome := 4;
        RETURN;
    END IF;
    SELECT x.id INTO dead_letter FROM tg.topic x WHERE x.name = dead_letter_name;
    SELECT * INTO g FROM tg.work_group w WHERE w.topic = p_topic AND w.name = p_name;
    IF FOUND AND g.dead_letter = dead_letter AND g.filter IS NOT DISTINCT FROM p_filter
       AND g.max_attempts = p_max_attempts AND g.visibility_ms = p_visibility_ms THEN
        outcome := 1;
        id := g.id;
        RETURN;
    END IF;
    IF dead_letter IS NULL THEN
        INSERT INTO tg.topic (name, durability, flush_interval_ms, max_message_bytes)
        VALUES (dead_letter_name, t.durability, t.flush_interval_ms, t.max_message_bytes + 4096)
        ON CONFLICT (name) DO NOTHING;
        SELECT x.id INTO dead_letter FROM tg.topic x WHERE x.name = dead_letter_name;
    END IF;
    -- An update, not just a lock: it waits for the publishers in progress,
    -- keeps new ones out until this commits, and makes a REPEATABLE READ
    -- publisher whose snapshot is older than the group fail (40001) rather
    -- than miss it.
    UPDATE tg.topic x SET next_offset = x.next_offset WHERE x.id = p_topic
    RETURNING x.next_offset, x.oldest INTO t.next_offset, t.oldest;
    -- Looked up again under the lock: another opener may have been first.
    SELECT * INTO g FROM tg.work_group w WHERE w.topic = p_topic AND w.name = p_name;
    IF FOUND THEN
        UPDATE tg.work_group w
        SET filter = p_filter, dead_letter = open_work_group.dead_letter, max_attempts = p_max_attempts,
            visibility_ms = p_visibility_ms
        WHERE w.id = g.id;
        outcome := CASE
            WHEN g.dead_letter = dead_letter AND g.filter IS NOT DISTINCT FROM p_filter
                 AND g.max_attempts = p_max_attempts AND g.visibility_ms = p_visibility_ms THEN 1
            ELSE 2
        END;
        id := g.id;
        RETURN;
    END IF;
    start_ := CASE WHEN p_latest THEN t.next_offset ELSE t.oldest END;
    INSERT INTO tg.work_group (topic, name, filter, dead_letter, max_attempts, visibility_ms, start_offset)
    VALUES (p_topic, p_name, p_filter, dead_letter, p_max_attempts, p_visibility_ms, start_)
    RETURNING work_group.id INTO id;
    backfilled := tg.enqueue(p_topic, start_, t.next_offset, id, clock_timestamp());
    outcome := 0;
END
$$;

-- Publishes the message at p_offset of p_group's topic to the group's
-- dead-letter topic and deletes its job (the caller holds the job's row
-- lock), in the caller's transaction. The dead letter has the message's
-- key, priority, headers (but those named tollgate.*, and at most as many
-- as leave room for its own within 64) and payload, and says where it came
-- from and why: headers tollgate.dlq.topic, .group, .offset, .attempts,
-- .reason (cut to 1024 bytes), and .headers-omitted when headers were left
-- out, as the embedded engine writes them. Returns its offset (NULL if the
-- message was no longer retained: the job is just deleted).
CREATE FUNCTION tg.dead_letter(p_group tg.work_group, p_offset bigint, p_attempts integer, p_reason text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m tg.message%ROWTYPE;
    source_name text;
    names text[];
    vals bytea[];
    user_names text[];
    user_vals bytea[];
    room integer;
    omitted integer;
    dead_offset bigint;
    now_ timestamptz;
BEGIN
    DELETE FROM tg.job w WHERE w.work_group = p_group.id AND w."offset" = p_offset;
    SELECT * INTO m FROM tg.message x WHERE x.topic = p_group.topic AND x."offset" = p_offset;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT x.name INTO source_name FROM tg.topic x WHERE x.id = p_group.topic;
    names := ARRAY['tollgate.dlq.topic', 'tollgate.dlq.group', 'tollgate.dlq.offset', 'tollgate.dlq.attempts',
                   'tollgate.dlq.reason'];
    vals := ARRAY[convert_to(source_name, 'UTF8'), convert_to(p_group.name, 'UTF8'),
                  convert_to(p_offset::text, 'UTF8'), convert_to(p_attempts::text, 'UTF8'),
                  convert_to(tg.truncate_bytes(coalesce(p_reason, ''), 1024), 'UTF8')];
    SELECT coalesce(array_agg(h.name ORDER BY h.i), '{}'), coalesce(array_agg(h.val ORDER BY h.i), '{}')
    INTO user_names, user_vals
    FROM unnest(m.header_names, m.header_values) WITH ORDINALITY AS h (name, val, i)
    WHERE NOT starts_with(h.name, 'tollgate.');
    -- The embedded engine counts the priority as a header, and keeps one
    -- place for headers-omitted.
    room := 64 - cardinality(names) - CASE WHEN m.priority > 0 THEN 1 ELSE 0 END - 1;
    omitted := greatest(0, cardinality(user_names) - room);
    IF omitted > 0 THEN
        names := names || 'tollgate.dlq.headers-omitted'::text;
        vals := vals || convert_to(omitted::text, 'UTF8');
    END IF;
    names := names || user_names[1:room];
    vals := vals || user_vals[1:room];
    UPDATE tg.topic x SET next_offset = x.next_offset + 1 WHERE x.id = p_group.dead_letter
    RETURNING x.next_offset - 1 INTO dead_offset;
    now_ := clock_timestamp();
    INSERT INTO tg.message (topic, "offset", key, priority, not_before, published_at, header_names, header_values, payload)
    VALUES (p_group.dead_letter, dead_offset, m.key, m.priority, NULL, now_, names, vals, m.payload);
    PERFORM tg.enqueue(p_group.dead_letter, dead_offset, dead_offset + 1, NULL, now_);
    RETURN dead_offset;
END
$$;

-- Milliseconds until a job of p_group may be received: 0 if one is ready
-- now (a receive in progress holds it, and may give it back), else until
-- the earliest delayed or in-flight job becomes visible (0 if that time has
-- come); NULL if the group has no job. With a notification for every
-- publish and every give-back, a waiting worker sleeps until then.
CREATE FUNCTION tg.next_visible(p_group integer) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM tg.job w WHERE w.work_group = p_group AND w.state = 0) THEN 0
        ELSE (
            -- greatest() would turn no job (NULL) into 0.
            SELECT CASE WHEN min(w.visible_at) IS NOT NULL THEN
                greatest(0, ceil(extract(epoch FROM (min(w.visible_at) - clock_timestamp())) * 1000))::bigint
            END
            FROM tg.job w WHERE w.work_group = p_group AND w.state <> 0
        )
    END
$$;

-- Up to p_max deliveries for worker group p_group, in the order a worker
-- takes them: highest priority first, then lowest offset, among the jobs
-- visible now (their delivery time, retry time or visibility deadline
-- passed). Each is in flight for the group's visibility timeout: it gets
-- attempt attempts + 1 and a new receipt. Jobs locked by another receive
-- are skipped, so competing receivers never get the same job. A job whose
-- attempts are used up (max_attempts) is dead-lettered instead, with its
-- last error as the reason; dead_lettered counts them.
--
-- A row per delivery: the message, its attempt and receipt, and visible_ms,
-- how long it stays in flight from the server's now. No delivery: one row
-- without an offset, with retry_ms as tg.next_visible says. No row: no
-- such group.
CREATE FUNCTION tg.receive(p_group integer, p_max integer, p_autocommit boolean)
RETURNS TABLE (
    "offset" bigint, attempt integer, receipt bigint, visible_ms bigint, key text, priority smallint,
    not_before_us bigint, published_us bigint, header_names text[], header_values bytea[], payload bytea,
    retry_ms bigint, dead_lettered integer
)
LANGUAGE plpgsql AS $$
DECLARE
    g tg.work_group%ROWTYPE;
    now_ timestamptz := clock_timestamp();
    j record;
    taken bigint[] := '{}';
    dead integer := 0;
    dead_before integer;
BEGIN
    SELECT * INTO g FROM tg.work_group w WHERE w.id = p_group;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Delayed and in-flight jobs whose time came are ready again (an
    -- expired delivery failed: the visibility timeout is its error).
    UPDATE tg.job u
    SET state = 0, receipt = NULL,
        last_error = CASE WHEN u.state = 2 THEN 'its visibility timeout passed' ELSE u.last_error END
    FROM (
        SELECT w."offset" FROM tg.job w
        WHERE w.work_group = p_group AND w.state <> 0 AND w.visible_at <= now_
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE u.work_group = p_group AND u."offset" = due."offset";
    LOOP
        dead_before := dead;
        FOR j IN
            SELECT w."offset", w.attempts, w.last_error FROM tg.job w
            WHERE w.work_group = p_group AND w.state = 0
            ORDER BY w.priority DESC, w."offset"
            LIMIT greatest(p_max, 0) - cardinality(taken)
            FOR UPDATE SKIP LOCKED
        LOOP
            IF j.attempts >= g.max_attempts THEN
                PERFORM tg.dead_letter(g, j."offset", j.attempts,
                                       coalesce(j.last_error, 'its last attempt was not settled'));
                dead := dead + 1;
            ELSE
                UPDATE tg.job w
                SET state = 2, attempts = w.attempts + 1, receipt = nextval('tg.receipt'),
                    visible_at = clock_timestamp() + g.visibility_ms * interval '1 millisecond'
                WHERE w.work_group = p_group AND w."offset" = j."offset";
                taken := taken || j."offset";
            END IF;
        END LOOP;
        -- Dead letters made room in the batch: look again.
        EXIT WHEN dead = dead_before OR cardinality(taken) >= p_max;
    END LOOP;
    IF cardinality(taken) > 0 OR dead > 0 THEN
        PERFORM tg.relax(g.topic, p_autocommit);
    END IF;
    IF cardinality(taken) = 0 THEN
        RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint, NULL::text, NULL::smallint,
            NULL::bigint, NULL::bigint, NULL::text[], NULL::bytea[], NULL::bytea, tg.next_visible(p_group), dead;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT w."offset", w.attempts, w.receipt,
           greatest(0, floor(extract(epoch FROM (w.visible_at - clock_timestamp())) * 1000))::bigint,
           m.key, m.priority, tg.to_us(m.not_before), tg.to_us(m.published_at), m.header_names, m.header_values,
           m.payload, NULL::bigint, dead
    FROM tg.job w JOIN tg.message m ON m.topic = g.topic AND m."offset" = w."offset"
    WHERE w.work_group = p_group AND w."offset" = ANY (taken)
    ORDER BY w.priority DESC, w."offset";
END
$$;

-- The job of delivery p_receipt of message p_offset in p_group, locked, if
-- that delivery is still in flight and before its deadline; else NULL (the
-- receipt is stale: the job was settled, or its deadline passed and it may
-- have been delivered again).
CREATE FUNCTION tg.delivery(p_group integer, p_offset bigint, p_receipt bigint) RETURNS tg.job
LANGUAGE plpgsql AS $$
DECLARE
    j tg.job%ROWTYPE;
BEGIN
    SELECT * INTO j FROM tg.job w WHERE w.work_group = p_group AND w."offset" = p_offset FOR UPDATE;
    -- The deadline is checked once the row is locked.
    IF NOT FOUND OR j.state <> 2 OR j.receipt IS DISTINCT FROM p_receipt OR j.visible_at <= clock_timestamp() THEN
        RETURN NULL;
    END IF;
    RETURN j;
END
$$;

-- The settles of a delivery. Each returns:
--   0: done
--   1: the receipt is stale (tg.delivery): nothing changed
--   2: done, and the message was dead-lettered (in this transaction)

-- Acknowledges a delivery: the message is done for the group.
CREATE FUNCTION tg.ack(p_group integer, p_offset bigint, p_receipt bigint, p_autocommit boolean) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    j tg.job%ROWTYPE;
BEGIN
    j := tg.delivery(p_group, p_offset, p_receipt);
    IF j.work_group IS NULL THEN
        RETURN 1;
    END IF;
    DELETE FROM tg.job w WHERE w.work_group = p_group AND w."offset" = p_offset;
    PERFORM tg.relax((SELECT g.topic FROM tg.work_group g WHERE g.id = p_group), p_autocommit);
    RETURN 0;
END
$$;

-- Gives a delivery back as a failed attempt (p_reason): visible again
-- after p_retry_ms (0: at once), or dead-lettered now if it was the last
-- attempt. Wakes the topic's waiters.
CREATE FUNCTION tg.nack(
    p_group integer, p_offset bigint, p_receipt bigint, p_retry_ms bigint, p_reason text, p_autocommit boolean
) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    j tg.job%ROWTYPE;
    g tg.work_group%ROWTYPE;
    status smallint := 0;
BEGIN
    j := tg.delivery(p_group, p_offset, p_receipt);
    IF j.work_group IS NULL THEN
        RETURN 1;
    END IF;
    SELECT * INTO g FROM tg.work_group w WHERE w.id = p_group;
    IF j.attempts >= g.max_attempts THEN
        PERFORM tg.dead_letter(g, p_offset, j.attempts, p_reason);
        status := 2;
    ELSE
        UPDATE tg.job w
        SET state = CASE WHEN p_retry_ms > 0 THEN 1 ELSE 0 END,
            visible_at = clock_timestamp() + greatest(p_retry_ms, 0) * interval '1 millisecond',
            receipt = NULL, last_error = p_reason
        WHERE w.work_group = p_group AND w."offset" = p_offset;
        PERFORM pg_notify('tg.topic', g.topic::text);
    END IF;
    PERFORM tg.relax(g.topic, p_autocommit);
    RETURN status;
END
$$;

-- Refuses a delivery: the message is dead-lettered now with p_reason,
-- whatever attempts it has left.
CREATE FUNCTION tg.reject(p_group integer, p_offset bigint, p_receipt bigint, p_reason text, p_autocommit boolean)
RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    j tg.job%ROWTYPE;
    g tg.work_group%ROWTYPE;
BEGIN
    j := tg.delivery(p_group, p_offset, p_receipt);
    IF j.work_group IS NULL THEN
        RETURN 1;
    END IF;
    SELECT * INTO g FROM tg.work_group w WHERE w.id = p_group;
    PERFORM tg.dead_letter(g, p_offset, j.attempts, p_reason);
    PERFORM tg.relax(g.topic, p_autocommit);
    RETURN 2;
END
$$;

-- Moves a delivery's deadline to p_by_ms from now (as the embedded
-- Delivery::extend does: from now, not from the old deadline). A deadline
-- moved earlier wakes the topic's waiters.
CREATE FUNCTION tg.extend(p_group integer, p_offset bigint, p_receipt bigint, p_by_ms bigint, p_autocommit boolean)
RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    j tg.job%ROWTYPE;
    topic_ integer;
    deadline timestamptz;
BEGIN
    j := tg.delivery(p_group, p_offset, p_receipt);
    IF j.work_group IS NULL THEN
        RETURN 1;
    END IF;
    deadline := clock_timestamp() + greatest(p_by_ms, 0) * interval '1 millisecond';
    UPDATE tg.job w SET visible_at = deadline WHERE w.work_group = p_group AND w."offset" = p_offset;
    SELECT g.topic INTO topic_ FROM tg.work_group g WHERE g.id = p_group;
    IF deadline < j.visible_at THEN
        PERFORM pg_notify('tg.topic', topic_::text);
    END IF;
    PERFORM tg.relax(topic_, p_autocommit);
    RETURN 0;
END
$$;

-- A worker group's jobs now: ready (visible now, including deliveries
-- whose deadline passed), delayed, and in flight.
CREATE FUNCTION tg.work_group_counts(p_group integer, OUT ready bigint, OUT delayed bigint, OUT in_flight bigint)
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE w.visible_at <= clock_timestamp() OR w.state = 0),
           count(*) FILTER (WHERE w.state = 1 AND w.visible_at > clock_timestamp()),
           count(*) FILTER (WHERE w.state = 2 AND w.visible_at > clock_timestamp())
    FROM tg.job w WHERE w.work_group = p_group
$$;

-- Retention: for each topic with one, deletes its oldest messages that are
-- past it (published more than retention_ms ago, or more than
-- retention_messages behind the end) and that no worker group of the topic
-- still has a job for (settled by every group, or never theirs). Only a
-- prefix goes, so that the retained messages stay dense: the first message
-- that is within retention or still has a job stops it. Subscriptions are
-- not waited for (as in the embedded log: a subscription behind the oldest
-- retained offset is told so).
--
-- Each topic looked at stays locked until the call's transaction ends
-- (publishers of it wait), so a call deletes at most p_limit messages in
-- all, topic by topic in id order; call it again while a row says more. A
-- topic a publisher holds now is skipped, left for a later call. A row per
-- topic that lost messages: how many, its oldest offset now, and whether
-- more may be due (the limit stopped it).
CREATE FUNCTION tg.cleanup(p_limit integer)
RETURNS TABLE (topic text, deleted bigint, oldest bigint, more boolean)
LANGUAGE plpgsql AS $$
DECLARE
    candidate integer;
    t tg.topic%ROWTYPE;
    budget bigint := greatest(p_limit, 0);
    upper_ bigint;
    bound bigint;
BEGIN
    FOR candidate IN
        SELECT x.id FROM tg.topic x
        WHERE x.retention_ms IS NOT NULL OR x.retention_messages IS NOT NULL
        ORDER BY x.id
    LOOP
        EXIT WHEN budget = 0;
        -- Locked, so that no worker group is created (and backfilled from
        -- the messages about to go) meanwhile.
        SELECT * INTO t FROM tg.topic x WHERE x.id = candidate FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        upper_ := least(t.next_offset, t.oldest + budget);
        IF t.retention_messages IS NOT NULL THEN
            upper_ := least(upper_, t.next_offset - t.retention_messages);
        END IF;
        SELECT min((SELECT min(j."offset") FROM tg.job j WHERE j.work_group = g.id)) INTO bound
        FROM tg.work_group g WHERE g.topic = t.id;
        upper_ := least(upper_, bound);
        IF t.retention_ms IS NOT NULL AND upper_ > t.oldest THEN
            SELECT min(m."offset") INTO bound FROM tg.message m
            WHERE m.topic = t.id AND m."offset" >= t.oldest AND m."offset" < upper_
              AND m.published_at >= clock_timestamp() - t.retention_ms * interval '1 millisecond';
            upper_ := least(upper_, bound);
        END IF;
        CONTINUE WHEN upper_ <= t.oldest;
        DELETE FROM tg.message m WHERE m.topic = t.id AND m."offset" >= t.oldest AND m."offset" < upper_;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        UPDATE tg.topic x SET oldest = upper_ WHERE x.id = t.id;
        topic := t.name;
        oldest := upper_;
        more := upper_ = t.oldest + budget;
        budget := budget - (upper_ - t.oldest);
        RETURN NEXT;
    END LOOP;
END
$$;

-- Publishes as tg.publish does, if every lock (p_lock_keys[i], held by
-- p_lock_owners[i] as acquisition p_lock_levels[i]) is still held: its
-- holder row is there, holds that level, its lease has not passed and its
-- client is alive. The keys' rows are locked (FOR SHARE, in key order)
-- first, so no acquirer can take a key over between the check and the
-- commit. lost_key: the first key whose lock was lost (nothing published,
-- first_offset NULL, count 0); NULL when published.
CREATE FUNCTION tg.publish_locked(
    p_topic integer, p_keys text[], p_priorities smallint[], p_not_before_us bigint[], p_payloads bytea[],
    p_header_of integer[], p_header_names text[], p_header_values bytea[], p_autocommit boolean,
    p_lock_keys text[], p_lock_owners text[], p_lock_levels bigint[],
    OUT first_offset bigint, OUT count integer, OUT lost_key text
)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz;
BEGIN
    count := 0;
    PERFORM 1 FROM tg.lock_key k WHERE k.key = ANY (p_lock_keys) ORDER BY k.key FOR SHARE;
    now_ := clock_timestamp();
    SELECT l.key INTO lost_key
    FROM unnest(p_lock_keys, p_lock_owners, p_lock_levels) WITH ORDINALITY AS l (key, owner, level, i)
    WHERE NOT EXISTS (
        SELECT 1 FROM tg.holder h
        WHERE h.key = l.key AND h.owner = l.owner AND l.level = ANY (h.levels)
          AND (h.lease_until IS NULL OR h.lease_until > now_) AND tg.alive(h.client, now_)
    )
    ORDER BY l.i LIMIT 1;
    IF lost_key IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT p.first_offset, p.count INTO first_offset, count
    FROM tg.publish(p_topic, p_keys, p_priorities, p_not_before_us, p_payloads, p_header_of, p_header_names,
                    p_header_values, p_autocommit) p;
END
$$;

-- The names of the topics, sorted.
CREATE FUNCTION tg.topic_names() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT t.name FROM tg.topic t ORDER BY t.name COLLATE "C"
$$;

-- Deletes topic p_name, its messages, committed offsets, worker groups and
-- their jobs. 0: deleted; 1: no such topic; 2: it is the dead-letter topic
-- of another topic's worker group (nothing deleted).
CREATE FUNCTION tg.delete_topic(p_name text) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    id_ integer;
BEGIN
    SELECT t.id INTO id_ FROM tg.topic t WHERE t.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 1;
    END IF;
    IF EXISTS (SELECT 1 FROM tg.work_group g WHERE g.dead_letter = id_ AND g.topic <> id_) THEN
        RETURN 2;
    END IF;
    DELETE FROM tg.job j USING tg.work_group g WHERE j.work_group = g.id AND g.topic = id_;
    DELETE FROM tg.message m WHERE m.topic = id_;
    DELETE FROM tg.topic t WHERE t.id = id_;
    PERFORM pg_notify('tg.topic', id_::text);
    RETURN 0;
END
$$;
