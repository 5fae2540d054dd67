"""TtlPolicy: which cache TTL each IMDS path gets, and how user rules override the defaults."""

from __future__ import annotations

import pytest

from imdsfs import ConfigError, TtlPolicy

LONG, MINUTE, SECONDS = 21600.0, 60.0, 5.0
MAC = "meta-data/network/interfaces/macs/0e:49:61:0f:c3:11"


@pytest.mark.parametrize(
    ("imds_path", "expected"),
    [
        # identity: fixed for the life of the instance
        ("meta-data/instance-id", LONG),
        ("meta-data/ami-id", LONG),
        ("meta-data/instance-type", LONG),
        ("meta-data/reservation-id", LONG),
        ("meta-data/mac", LONG),
        ("meta-data/placement/availability-zone", LONG),
        ("meta-data/services/domain", LONG),
        ("dynamic/instance-identity/document", LONG),
        ("dynamic/instance-identity/rsa2048", LONG),
        # changed through the EC2 API at runtime
        (f"{MAC}/local-ipv4s", MINUTE),
        ("meta-data/tags/instance/Name", MINUTE),
        # changes on its own, and someone may be waiting for it
        ("meta-data/iam/security-credentials/my-role", SECONDS),
        ("meta-data/iam/info", SECONDS),
        ("meta-data/identity-credentials/ec2/security-credentials/ec2-instance", SECONDS),
        ("meta-data/spot/instance-action", SECONDS),
        ("meta-data/events/maintenance/scheduled", SECONDS),
        ("meta-data/events/recommendations/rebalance", SECONDS),
        ("meta-data/autoscaling/target-lifecycle-state", SECONDS),
        # everything else
        ("meta-data/local-ipv4", MINUTE),
        ("meta-data/public-hostname", MINUTE),
        ("user-data", MINUTE),
        # listings are short everywhere: entries appear and disappear
        ("meta-data/", SECONDS),
        ("meta-data/placement/", SECONDS),
        (f"{MAC}/", SECONDS),
        ("dynamic/", SECONDS),
        ("", SECONDS),
    ],
)
def test_default_policy_gives_each_kind_of_path_its_ttl(imds_path: str, expected: float) -> None:
    assert TtlPolicy().ttl(imds_path) == expected


def test_default_negative_ttl_is_short() -> None:
    assert TtlPolicy().negative_ttl == 2.0


def test_user_rule_beats_the_builtin_table() -> None:
    policy = TtlPolicy.from_rules(["instance-id=1", "**/=30"])
    assert policy.ttl("meta-data/instance-id") == 1
    assert policy.ttl("meta-data/placement/") == 30
    assert policy.ttl("meta-data/ami-id") == LONG


def test_first_matching_user_rule_wins() -> None:
    policy = TtlPolicy.from_rules(["spot/*=7", "spot/**=9", "spot/instance-action=11"])
    assert policy.ttl("meta-data/spot/instance-action") == 7
    assert policy.ttl("meta-data/spot/") == 9  # one star needs one more segment


def test_single_star_stays_within_one_segment() -> None:
    policy = TtlPolicy.from_rules(["*=3", "tags/*=4"])
    assert policy.ttl("meta-data/local-ipv4") == 3
    assert policy.ttl("user-data") == 3
    assert policy.ttl("meta-data/tags/instance") == 4
    assert policy.ttl("meta-data/tags/instance/Name") == MINUTE  # two segments below tags


def test_double_star_spans_any_number_of_segments_including_none() -> None:
    policy = TtlPolicy.from_rules(["network/**/local-ipv4s=1", "**=3"])
    assert policy.ttl(f"{MAC}/local-ipv4s") == 1
    assert policy.ttl("meta-data/network/local-ipv4s") == 1
    assert policy.ttl(f"{MAC}/mac") == 3
    assert policy.ttl("meta-data/placement/region") == 3
    assert policy.ttl("meta-data/") == 3


def test_segment_patterns_are_fnmatch_and_case_sensitive() -> None:
    policy = TtlPolicy.from_rules(["ami-?d=1", "public-[ik]*=2", "Instance-ID=3"])
    assert policy.ttl("meta-data/ami-id") == 1
    assert policy.ttl("meta-data/public-ipv4") == 2
    assert policy.ttl("meta-data/public-keys/") == 2
    assert policy.ttl("meta-data/public-hostname") == MINUTE
    assert policy.ttl("meta-data/instance-id") == LONG


def test_trailing_slash_pattern_matches_listings_only() -> None:
    policy = TtlPolicy.from_rules(["tags/instance/=30"])
    assert policy.ttl("meta-data/tags/instance/") == 30
    assert policy.ttl("meta-data/tags/instance") == MINUTE


def test_slash_alone_is_the_root_listing() -> None:
    policy = TtlPolicy.from_rules(["/=1"])
    assert policy.ttl("meta-data/") == 1
    assert policy.ttl("meta-data/placement/") == SECONDS


def test_leading_slash_in_a_pattern_is_ignored() -> None:
    assert TtlPolicy.from_rules(["/spot/**=1"]).ttl("meta-data/spot/instance-action") == 1


def test_non_meta_data_roots_are_matched_by_their_mount_path() -> None:
    policy = TtlPolicy.from_rules(["dynamic/**=1", "user-data=2"])
    assert policy.ttl("dynamic/instance-identity/document") == 1
    assert policy.ttl("user-data") == 2


def test_rule_splits_on_the_last_equals_sign_since_tag_keys_may_contain_one() -> None:
    policy = TtlPolicy.from_rules(["tags/instance/a=b=4"])
    assert policy.ttl("meta-data/tags/instance/a=b") == 4


def test_default_and_negative_rules_set_those_ttls() -> None:
    policy = TtlPolicy.from_rules(["default=120", "negative=0.5", " user-data = 7 "])
    assert policy.ttl("meta-data/local-ipv4") == 120
    assert policy.ttl("meta-data/instance-id") == LONG  # the builtin table still applies
    assert policy.ttl("user-data") == 7
    assert policy.negative_ttl == 0.5


def test_zero_ttl_is_allowed_and_means_never_cached() -> None:
    assert TtlPolicy.from_rules(["spot/**=0"]).ttl("meta-data/spot/instance-action") == 0


@pytest.mark.parametrize(
    "rule",
    [
        "instance-id",
        "=5",
        "instance-id=",
        "instance-id=soon",
        "instance-id=-1",
        "instance-id=inf",
        "instance-id=nan",
        "network//macs=1",
        "default=x",
        "negative=-2",
    ],
)
def test_malformed_rule_is_a_config_error(rule: str) -> None:
    with pytest.raises(ConfigError):
        TtlPolicy.from_rules([rule])


def test_describe_lists_user_rules_then_builtins_then_default_and_negative() -> None:
    table = TtlPolicy.from_rules(["spot/**=1", "default=90"]).describe()
    assert table[0] == ("spot/**", 1)
    assert table[1] == ("**/", SECONDS)
    assert ("instance-id", LONG) in table
    assert table[-2:] == [("default", 90), ("negative", 2.0)]


def test_describe_round_trips_through_from_rules() -> None:
    policy = TtlPolicy.from_rules(["spot/**=1", "tags/*/=9", "default=90", "negative=3"])
    again = TtlPolicy.from_rules(f"{pattern}={seconds}" for pattern, seconds in policy.describe())
    paths = ["meta-data/spot/", "meta-data/tags/instance/", "user-data", "meta-data/mac"]
    assert [again.ttl(p) for p in paths] == [policy.ttl(p) for p in paths]
    assert again.negative_ttl == policy.negative_ttl
