"""The test services themselves: Redis db numbers are never shared by two tests at once."""

import redis

from tests.services import REDIS_CLAIM_SECONDS, REDIS_URL, claim_redis_number, redis_claim_key, unavailable


def test_every_claimed_redis_number_is_held_by_one_test_only():
    admin = redis.Redis.from_url(f"{REDIS_URL}/0", socket_timeout=5)
    try:
        admin.ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {REDIS_URL}", error)
    claims = []
    try:
        for _ in range(3):  # three tests at once; other workers may hold others meanwhile
            claims.append(claim_redis_number(admin))
        numbers = [number for number, _ in claims]
        assert len(set(numbers)) == len(numbers)
        for number, token in claims:
            assert admin.get(redis_claim_key(number)) == token.encode()
            assert 0 < admin.ttl(redis_claim_key(number)) <= REDIS_CLAIM_SECONDS
    finally:
        for number, _ in claims:
            admin.delete(redis_claim_key(number))
