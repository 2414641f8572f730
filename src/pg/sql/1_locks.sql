-- Schema version 1: the lock tables and their functions (docs/POSTGRES.md,
-- "Locks"). `tg.` is replaced by the configured schema's name before this
-- runs; every object is qualified with it, so nothing depends on search_path.
--
-- Every function runs in the caller's statement transaction (autocommit), so
-- one call is one atomic step. Times are the server's: clock_timestamp().

-- A process using the backend. Its holders and waiters count only while
-- expires_at is in the future; a heartbeat pushes it forward.
CREATE TABLE tg.client (
    id bigserial PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    label text NOT NULL DEFAULT ''
);

-- Fencing tokens for every key: taken under the key's row lock, so a key's
-- tokens strictly increase.
CREATE SEQUENCE tg.fence;
-- Arrival order of waiters.
CREATE SEQUENCE tg.wait_seq;

-- One row per key locked: its row lock serializes every operation on the key;
-- version is the fencing token of its last exclusive grant (for stamps).
CREATE TABLE tg.lock_key (
    key text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);

-- Who holds what. A shared key has one row per owner. levels names each
-- acquisition the owner made of the key (a client-chosen id): a nested
-- acquisition adds one, a release removes its own, so that retrying an
-- acquisition or a release whose answer was lost changes nothing.
CREATE TABLE tg.holder (
    key text NOT NULL,
    owner text NOT NULL,
    client bigint NOT NULL,
    exclusive boolean NOT NULL,
    levels bigint[] NOT NULL,
    fence bigint NOT NULL,
    lease_until timestamptz,
    PRIMARY KEY (key, owner)
);
CREATE INDEX holder_owner ON tg.holder (owner);

-- Who waits for what: one row per wait (an owner's acquisition, by its
-- level: two threads of one session may wait for one key). queued: a FIFO
-- waiter (served in seq order, and an edge of the wait-for graph);
-- otherwise a lock_all watcher, which holds nothing while it waits and only
-- asks to be notified.
CREATE TABLE tg.waiter (
    key text NOT NULL,
    owner text NOT NULL,
    level bigint NOT NULL,
    client bigint NOT NULL,
    exclusive boolean NOT NULL,
    queued boolean NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (key, owner, level)
);
CREATE INDEX waiter_owner ON tg.waiter (owner);

-- Whether a client is alive at `at`.
CREATE FUNCTION tg.alive(p_client bigint, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM tg.client WHERE id = p_client AND expires_at > at)
$$;

-- Registers a client alive for ttl_ms; returns its id.
CREATE FUNCTION tg.register_client(p_ttl_ms bigint, p_label text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO tg.client (expires_at, label)
    VALUES (clock_timestamp() + p_ttl_ms * interval '1 millisecond', p_label)
    RETURNING id
$$;

-- Keeps a client alive for ttl_ms more. False if it had already expired:
-- its grants may have passed to others, so it must not come back to life.
CREATE FUNCTION tg.heartbeat(p_client bigint, p_ttl_ms bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE tg.client SET expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond'
        WHERE id = p_client AND expires_at > clock_timestamp()
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM renewed)
$$;

-- Wakes the waiters of `p_key` (at commit), if any waits. When the first
-- queued waiter wants the key exclusively and nobody watches it (lock_all),
-- only that waiter can be served next: the payload names it (after a \x01),
-- so that the other waiters sleep on. Otherwise every waiter retries.
CREATE FUNCTION tg.wake(p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    head tg.waiter%ROWTYPE;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tg.waiter WHERE key = p_key) THEN
        RETURN;
    END IF;
    SELECT * INTO head FROM tg.waiter w
    WHERE w.key = p_key AND w.queued AND tg.alive(w.client, clock_timestamp())
    ORDER BY w.seq LIMIT 1;
    IF FOUND AND head.exclusive AND NOT EXISTS (SELECT 1 FROM tg.waiter w WHERE w.key = p_key AND NOT w.queued) THEN
        PERFORM pg_notify('tg.lock', p_key || chr(1) || head.owner);
    ELSE
        PERFORM pg_notify('tg.lock', p_key);
    END IF;
END
$$;

-- Ends a client cleanly: its grants and waits go, and their keys' waiters
-- are woken.
CREATE FUNCTION tg.unregister_client(p_client bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    DELETE FROM tg.waiter WHERE client = p_client;
    FOR k IN DELETE FROM tg.holder WHERE client = p_client RETURNING key LOOP
        PERFORM tg.wake(k);
    END LOOP;
    DELETE FROM tg.client WHERE id = p_client;
END
$$;

-- Locks the key's row (creating it), then deletes its dead holders and
-- waiters. Returns whether a holder was deleted.
CREATE FUNCTION tg.enter(p_key text, now_ timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    gone integer;
BEGIN
    -- A row deleted by tg.shrink between the insert and the lock is
    -- inserted again.
    LOOP
        INSERT INTO tg.lock_key (key) VALUES (p_key) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM tg.lock_key WHERE key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    DELETE FROM tg.holder h
    WHERE h.key = p_key
      AND ((h.lease_until IS NOT NULL AND h.lease_until <= now_) OR NOT tg.alive(h.client, now_));
    GET DIAGNOSTICS gone = ROW_COUNT;
    DELETE FROM tg.waiter w WHERE w.key = p_key AND NOT tg.alive(w.client, now_);
    RETURN gone > 0;
END
$$;

-- Milliseconds from now_ until the earliest moment that something blocking
-- (p_owner, p_exclusive) on p_key may go without a notification: a holder's
-- lease or client, or an earlier waiter's client, expiring. NULL if nothing.
CREATE FUNCTION tg.retry_ms(p_key text, p_owner text, p_exclusive boolean, now_ timestamptz) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT ceil(extract(epoch FROM (min(at) - now_)) * 1000)::bigint
    FROM (
        SELECT least(h.lease_until, c.expires_at) AS at
        FROM tg.holder h JOIN tg.client c ON c.id = h.client
        WHERE h.key = p_key AND h.owner <> p_owner AND (p_exclusive OR h.exclusive)
        UNION ALL
        SELECT c.expires_at
        FROM tg.waiter w JOIN tg.client c ON c.id = w.client
        WHERE w.key = p_key AND w.owner <> p_owner AND w.queued AND (p_exclusive OR w.exclusive)
    ) blockers
$$;

-- The wait-for cycle through p_owner, as the keys waited for along it
-- starting with p_owner's own, or NULL. Callers hold the deadlock-check lock.
CREATE FUNCTION tg.find_cycle(p_owner text, now_ timestamptz) RETURNS text[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk (owner, path, keys) AS (
        SELECT p_owner, ARRAY[p_owner], ARRAY[]::text[]
        UNION ALL
        SELECT h.owner, walk.path || h.owner, walk.keys || w.key
        FROM walk
        JOIN tg.waiter w ON w.owner = walk.owner AND w.queued
        JOIN tg.holder h ON h.key = w.key AND h.owner <> w.owner AND (w.exclusive OR h.exclusive)
        WHERE (walk.owner <> p_owner OR cardinality(walk.path) = 1)
          AND (h.owner = p_owner OR NOT h.owner = ANY (walk.path))
          AND (h.lease_until IS NULL OR h.lease_until > now_)
          AND tg.alive(h.client, now_)
    )
    SELECT keys FROM walk WHERE owner = p_owner AND cardinality(path) > 1 LIMIT 1
$$;

-- One acquisition attempt of p_key by p_owner.
--   outcome 0: granted, fence is the token
--   outcome 1: nested on the owner's exclusive grant, fence is its token
--   outcome 2: not granted; retry_ms as tg.retry_ms; if p_wait, the owner
--              now waits in the queue (kept across attempts, so its place
--              in line is kept)
--   outcome 3: the owner holds the key shared and asked for it exclusively
--   outcome 4: deadlock: waiting would close a cycle; cycle is its keys
--   outcome 5: the client has expired: it may not take new grants
CREATE FUNCTION tg.acquire(
    p_key text, p_owner text, p_client bigint, p_exclusive boolean, p_lease_ms bigint, p_wait boolean, p_level bigint,
    OUT outcome smallint, OUT fence bigint, OUT retry_ms bigint, OUT cycle text[]
)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    mine tg.holder%ROWTYPE;
    my_seq bigint;
    freed boolean;
BEGIN
    IF NOT tg.alive(p_client, now_) THEN
        outcome := 5;
        RETURN;
    END IF;
    freed := tg.enter(p_key, now_);
    SELECT * INTO mine FROM tg.holder h WHERE h.key = p_key AND h.owner = p_owner;
    IF FOUND THEN
        IF p_level = ANY (mine.levels) THEN
            -- A retry of an acquisition that was granted.
            outcome := CASE WHEN mine.exclusive THEN 1 ELSE 0 END;
            fence := mine.fence;
        ELSIF mine.exclusive THEN
            UPDATE tg.holder h SET levels = h.levels || p_level WHERE h.key = p_key AND h.owner = p_owner;
            outcome := 1;
            fence := mine.fence;
        ELSIF p_exclusive THEN
            outcome := 3;
        ELSE
            fence := nextval('tg.fence');
            UPDATE tg.holder h SET levels = h.levels || p_level, fence = acquire.fence
            WHERE h.key = p_key AND h.owner = p_owner;
            outcome := 0;
        END IF;
        DELETE FROM tg.waiter w WHERE w.key = p_key AND w.owner = p_owner AND w.level = p_level;
        RETURN;
    END IF;
    SELECT w.seq INTO my_seq FROM tg.waiter w
    WHERE w.key = p_key AND w.owner = p_owner AND w.level = p_level AND w.queued;
    IF NOT EXISTS (
        SELECT 1 FROM tg.holder h WHERE h.key = p_key AND (p_exclusive OR h.exclusive)
    ) AND NOT EXISTS (
        SELECT 1 FROM tg.waiter w
        WHERE w.key = p_key AND w.owner <> p_owner AND w.queued AND (p_exclusive OR w.exclusive)
          AND (my_seq IS NULL OR w.seq < my_seq)
    ) THEN
        fence := nextval('tg.fence');
        INSERT INTO tg.holder (key, owner, client, exclusive, levels, fence, lease_until)
        VALUES (p_key, p_owner, p_client, p_exclusive, ARRAY[p_level], fence,
                CASE WHEN p_lease_ms IS NULL THEN NULL ELSE now_ + p_lease_ms * interval '1 millisecond' END);
        IF p_exclusive THEN
            UPDATE tg.lock_key k SET version = fence WHERE k.key = p_key;
        END IF;
        DELETE FROM tg.waiter w WHERE w.key = p_key AND w.owner = p_owner AND w.level = p_level;
        -- Shared waiters queued behind us may be grantable too.
        IF NOT p_exclusive AND my_seq IS NOT NULL THEN
            PERFORM tg.wake(p_key);
        END IF;
        outcome := 0;
        RETURN;
    END IF;
    IF freed THEN
        -- Dead holders were removed: earlier waiters may now be served.
        PERFORM tg.wake(p_key);
    END IF;
    outcome := 2;
    retry_ms := tg.retry_ms(p_key, p_owner, p_exclusive, now_);
    IF p_wait AND my_seq IS NULL THEN
        INSERT INTO tg.waiter (key, owner, level, client, exclusive, queued, seq)
        VALUES (p_key, p_owner, p_level, p_client, p_exclusive, true, nextval('tg.wait_seq'));
        -- One constant for every deadlock check: checks are serialized, so
        -- the wait that closes a cycle sees every other wait of it.
        PERFORM pg_advisory_xact_lock(7386028463207301120);
        cycle := tg.find_cycle(p_owner, now_);
        IF cycle IS NOT NULL THEN
            DELETE FROM tg.waiter w WHERE w.key = p_key AND w.owner = p_owner AND w.level = p_level;
            outcome := 4;
            retry_ms := NULL;
        END IF;
    END IF;
END
$$;

-- Stops waiting for p_key (a timeout, an interrupt, a dropped future). Wakes
-- the waiters queued behind it.
CREATE FUNCTION tg.give_up(p_key text, p_owner text, p_level bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tg.waiter WHERE key = p_key AND owner = p_owner AND level = p_level;
    IF FOUND THEN
        PERFORM tg.wake(p_key);
    END IF;
END
$$;

-- Releases acquisition p_level of p_owner's grant of p_key (the key is
-- free once no level is left).
--   0: released
--   1: the grant was void (its lease or its client expired), or this level
--      was released already
CREATE FUNCTION tg.release(p_key text, p_owner text, p_level bigint) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    mine tg.holder%ROWTYPE;
BEGIN
    PERFORM 1 FROM tg.lock_key WHERE key = p_key FOR UPDATE;
    SELECT * INTO mine FROM tg.holder h WHERE h.key = p_key AND h.owner = p_owner;
    IF NOT FOUND OR NOT p_level = ANY (mine.levels) THEN
        RETURN 1;
    END IF;
    IF (mine.lease_until IS NOT NULL AND mine.lease_until <= now_) OR NOT tg.alive(mine.client, now_) THEN
        DELETE FROM tg.holder WHERE key = p_key AND owner = p_owner;
        PERFORM tg.wake(p_key);
        RETURN 1;
    END IF;
    IF cardinality(mine.levels) > 1 THEN
        UPDATE tg.holder SET levels = array_remove(levels, p_level) WHERE key = p_key AND owner = p_owner;
    ELSE
        DELETE FROM tg.holder WHERE key = p_key AND owner = p_owner;
        PERFORM tg.wake(p_key);
    END IF;
    RETURN 0;
END
$$;

-- Releases acquisition p_level of p_owner's grants of p_keys (a lock_all's
-- keys, sorted) in one transaction; returns how many were void.
CREATE FUNCTION tg.release_all(p_keys text[], p_owner text, p_level bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    k text;
    void integer := 0;
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        void := void + tg.release(k, p_owner, p_level);
    END LOOP;
    RETURN void;
END
$$;

-- Moves the lease of p_owner's grant of p_key to now + p_lease_ms.
--   0: renewed; 1: the grant was void (expired); 2: the grant has no lease
CREATE FUNCTION tg.renew(p_key text, p_owner text, p_lease_ms bigint) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    mine tg.holder%ROWTYPE;
BEGIN
    PERFORM 1 FROM tg.lock_key WHERE key = p_key FOR UPDATE;
    SELECT * INTO mine FROM tg.holder h WHERE h.key = p_key AND h.owner = p_owner;
    IF NOT FOUND OR (mine.lease_until IS NOT NULL AND mine.lease_until <= now_) OR NOT tg.alive(mine.client, now_) THEN
        RETURN 1;
    END IF;
    IF mine.lease_until IS NULL THEN
        RETURN 2;
    END IF;
    UPDATE tg.holder SET lease_until = now_ + p_lease_ms * interval '1 millisecond'
    WHERE key = p_key AND owner = p_owner;
    RETURN 0;
END
$$;

-- All of p_keys (sorted, distinct) for p_owner, or none.
--   outcome 0: granted; fences[i] is the token of p_keys[i]
--   outcome 2: not granted; retry_ms as tg.retry_ms over the blocking keys;
--              if p_wait, the owner watches the blocking keys (a
--              notification, no place in any queue)
--   outcome 3: one of the keys is held shared by the owner, asked exclusively
--   outcome 5: the client has expired
CREATE FUNCTION tg.acquire_all(
    p_keys text[], p_owner text, p_client bigint, p_exclusive boolean, p_lease_ms bigint, p_wait boolean,
    p_level bigint, OUT outcome smallint, OUT fences bigint[], OUT retry_ms bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    k text;
    mine tg.holder%ROWTYPE;
    blocking text[] := ARRAY[]::text[];
    f bigint;
    wait_ms bigint;
BEGIN
    IF NOT tg.alive(p_client, now_) THEN
        outcome := 5;
        RETURN;
    END IF;
    FOREACH k IN ARRAY p_keys LOOP
        PERFORM tg.enter(k, now_);
        SELECT * INTO mine FROM tg.holder h WHERE h.key = k AND h.owner = p_owner;
        IF FOUND THEN
            IF p_exclusive AND NOT mine.exclusive THEN
                outcome := 3;
                RETURN;
            END IF;
        ELSIF EXISTS (SELECT 1 FROM tg.holder h WHERE h.key = k AND (p_exclusive OR h.exclusive))
           OR EXISTS (SELECT 1 FROM tg.waiter w
                      WHERE w.key = k AND w.owner <> p_owner AND w.queued AND (p_exclusive OR w.exclusive)) THEN
            blocking := blocking || k;
        END IF;
    END LOOP;
    IF cardinality(blocking) > 0 THEN
        outcome := 2;
        FOREACH k IN ARRAY blocking LOOP
            wait_ms := tg.retry_ms(k, p_owner, p_exclusive, now_);
            IF wait_ms IS NOT NULL AND (retry_ms IS NULL OR wait_ms < retry_ms) THEN
                retry_ms := wait_ms;
            END IF;
            IF p_wait THEN
                INSERT INTO tg.waiter (key, owner, level, client, exclusive, queued, seq)
                VALUES (k, p_owner, p_level, p_client, p_exclusive, false, 0)
                ON CONFLICT (key, owner, level) DO NOTHING;
            END IF;
        END LOOP;
        RETURN;
    END IF;
    fences := ARRAY[]::bigint[];
    FOREACH k IN ARRAY p_keys LOOP
        SELECT * INTO mine FROM tg.holder h WHERE h.key = k AND h.owner = p_owner;
        IF FOUND AND p_level = ANY (mine.levels) THEN
            f := mine.fence;
        ELSIF FOUND AND mine.exclusive THEN
            UPDATE tg.holder h SET levels = h.levels || p_level WHERE h.key = k AND h.owner = p_owner;
            f := mine.fence;
        ELSE
            f := nextval('tg.fence');
            INSERT INTO tg.holder (key, owner, client, exclusive, levels, fence, lease_until)
            VALUES (k, p_owner, p_client, p_exclusive, ARRAY[p_level], f,
                    CASE WHEN p_lease_ms IS NULL THEN NULL ELSE now_ + p_lease_ms * interval '1 millisecond' END)
            ON CONFLICT (key, owner) DO UPDATE SET levels = tg.holder.levels || p_level, fence = EXCLUDED.fence;
            IF p_exclusive THEN
                UPDATE tg.lock_key SET version = f WHERE key = k;
            END IF;
        END IF;
        fences := fences || f;
    END LOOP;
    DELETE FROM tg.waiter w WHERE w.owner = p_owner AND w.level = p_level AND w.key = ANY (p_keys);
    outcome := 0;
END
$$;

-- Stops watching p_keys (a lock_all that gave up).
CREATE FUNCTION tg.give_up_all(p_keys text[], p_owner text, p_level bigint) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tg.waiter WHERE owner = p_owner AND level = p_level AND key = ANY (p_keys)
$$;

-- The highest version of a lock_key row the cleanup deleted: a key without
-- a row stamps as -1 - floor, so that a row created, granted and deleted
-- between a stamp and its validation changes the stamp.
CREATE TABLE tg.lock_floor (floor bigint NOT NULL);
INSERT INTO tg.lock_floor VALUES (0);

-- An optimistic read's stamp: the key's version (the token of its last
-- exclusive grant), -1 - floor for a key without a row, or NULL while it is
-- held exclusively (a stamp taken then is never valid). Validating is
-- taking the stamp again and comparing.
CREATE FUNCTION tg.stamp(p_key text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (
            SELECT 1 FROM tg.holder h
            WHERE h.key = p_key AND h.exclusive
              AND (h.lease_until IS NULL OR h.lease_until > clock_timestamp())
              AND tg.alive(h.client, clock_timestamp())
        ) THEN NULL
        ELSE coalesce(
            (SELECT version FROM tg.lock_key WHERE key = p_key),
            (SELECT -1 - floor FROM tg.lock_floor)
        )
    END
$$;

-- What the lock tables hold now, across every client: fencing tokens handed
-- out (grants), live grants, queued waiters, and key rows.
CREATE FUNCTION tg.stats(OUT grants bigint, OUT held bigint, OUT waiting bigint, OUT entries bigint)
LANGUAGE sql STABLE AS $$
    SELECT
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tg.fence),
        (SELECT count(*) FROM tg.holder h
         WHERE (h.lease_until IS NULL OR h.lease_until > clock_timestamp()) AND tg.alive(h.client, clock_timestamp())),
        (SELECT count(*) FROM tg.waiter w WHERE w.queued AND tg.alive(w.client, clock_timestamp())),
        (SELECT count(*) FROM tg.lock_key)
$$;

-- Deletes the rows of keys nobody holds or waits for (their next
-- acquisition creates them again), raising the stamp floor past their
-- versions. Returns how many were deleted.
CREATE FUNCTION tg.shrink() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint;
    top bigint;
BEGIN
    WITH idle AS (
        SELECT k.key FROM tg.lock_key k
        WHERE NOT EXISTS (SELECT 1 FROM tg.holder h WHERE h.key = k.key)
          AND NOT EXISTS (SELECT 1 FROM tg.waiter w WHERE w.key = k.key)
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM tg.lock_key k USING idle WHERE k.key = idle.key
          AND NOT EXISTS (SELECT 1 FROM tg.holder h WHERE h.key = k.key)
        RETURNING k.version
    )
    SELECT count(*), max(version) INTO gone, top FROM deleted;
    IF top IS NOT NULL THEN
        UPDATE tg.lock_floor SET floor = greatest(floor, top);
    END IF;
    RETURN gone;
END
$$;
