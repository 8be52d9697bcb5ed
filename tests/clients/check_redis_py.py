"""redis-py against a quorumkv cluster, with the library's default settings.

Usage: python check_redis_py.py PORT [PORT ...]  (the RESP ports of the cluster's nodes)
Exits 0 when every check holds; raises (exit 1) naming the first that does not.
"""

import sys
import time

import redis


def check(ports):
    # Default settings: in redis-py 8 that is RESP3 (HELLO 3) and decode_responses off.
    nodes = [redis.Redis(host="127.0.0.1", port=p) for p in ports]
    a, b = nodes[0], nodes[-1]
    assert a.ping() is True
    assert a.flushall() is True

    # Strings, binary-safe, read on another node.
    assert a.set("greeting", b"hello \x00\xff") is True
    assert b.get("greeting") == b"hello \x00\xff"
    assert a.set("greeting", "x", nx=True) is None
    assert a.getset("greeting", "bye") == b"hello \x00\xff"
    assert a.mset({"m1": "1", "m2": "2"}) is True
    assert b.mget("m1", "m2", "nope") == [b"1", b"2", None]
    assert a.append("m1", "0") == 2
    assert a.strlen("m1") == 2
    assert a.getrange("greeting", 0, 1) == b"by"
    assert a.getdel("m2") == b"2" and b.get("m2") is None

    # Counters read with GET.
    assert a.incr("views") == 1
    assert b.incrby("views", 10) == 11
    assert a.decr("views") == 10
    assert b.get("views") == b"10"
    assert abs(a.incrbyfloat("price", 1.5) - 1.5) < 1e-9
    a.set("n", "10")
    assert b.incr("n") == 11

    # Hashes.
    assert a.hset("user:1", mapping={"name": "ann", "age": "30"}) == 2
    assert b.hget("user:1", "name") == b"ann"
    assert b.hgetall("user:1") == {b"name": b"ann", b"age": b"30"}
    assert a.hincrby("user:1", "age", 1) == 31
    assert b.hmget("user:1", ["age", "nope"]) == [b"31", None]
    assert a.hdel("user:1", "name") == 1
    assert sorted(b.hkeys("user:1")) == [b"age"]
    assert a.hlen("user:1") == 1

    # Sets.
    assert a.sadd("team", "a", "b", "c") == 3
    assert b.srem("team", "b") == 1
    assert b.smembers("team") == {b"a", b"c"}
    assert a.sismember("team", "a") == 1 or a.sismember("team", "a") is True
    assert a.scard("team") == 2

    # Types and errors.
    assert a.type("team") == b"set"
    try:
        a.get("team")
        raise AssertionError("GET of a set must fail")
    except redis.ResponseError as e:
        assert "WRONGTYPE" in str(e), e

    # Expiry.
    assert a.set("short", "v", px=300) is True
    assert 0 < b.pttl("short") <= 300
    assert a.expire("greeting", 100) is True
    assert 99 <= b.ttl("greeting") <= 100
    assert a.persist("greeting") is True
    assert b.ttl("greeting") == -1
    time.sleep(0.6)
    assert b.get("short") is None

    # A plain pipeline.
    pipe = a.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"p{i}", i)
        pipe.incr("piped")
    replies = pipe.execute()
    assert replies[1::2] == list(range(1, 51)), replies
    # A transaction pipeline (MULTI/EXEC, redis-py's default).
    pipe = a.pipeline()
    pipe.set("tx", "1").incr("tx").get("tx")
    assert pipe.execute() == [True, 2, b"2"]

    # scan_iter over a few thousand keys written through every node.
    wanted = set()
    for i in range(3000):
        key = f"scan:{i}"
        nodes[i % len(nodes)].set(key, i)
        wanted.add(key.encode())
    seen = set(b.scan_iter(match="scan:*", count=500))
    missing = wanted - seen
    assert not missing, f"scan_iter missed {len(missing)} keys, e.g. {sorted(missing)[:3]}"
    assert a.dbsize() >= 3000

    # FLUSHALL empties the whole cluster; writes after it are kept.
    assert b.flushall() is True
    assert a.get("views") is None
    left = a.dbsize()
    assert left == 0, f"DBSIZE {left} after FLUSHALL: {sorted(a.keys('*'))[:10]}, again {a.dbsize()}"
    assert a.set("after", "1") is True and b.get("after") == b"1"

    # Connection commands clients send.
    assert a.client_setname("checker") is True
    assert a.client_getname() in (b"checker", "checker")
    info = a.info()
    assert "redis_version" in info and "connected_clients" in info
    assert a.config_get("maxmemory")


if __name__ == "__main__":
    check([int(p) for p in sys.argv[1:]])
    print("redis-py", redis.__version__, "ok")
