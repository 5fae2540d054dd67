"""TtlPolicy: which cache TTL each mount path gets (EC2's built-in table), and how user rules
override it."""

from __future__ import annotations

import pytest

from imdsfs import ConfigError, Ec2Provider, TtlPolicy

EC2 = Ec2Provider.ttl_rules

LONG, MINUTE, SECONDS = 21600.0, 60.0, 5.0
MAC = "network/interfaces/macs/0e:49:61:0f:c3:11"


@pytest.mark.parametrize(
    ("imds_path", "expected"),
    [
        # identity: fixed for the life of the instance
        ("instance-id", LONG),
        ("ami-id", LONG),
        ("instance-type", LONG),
        ("reservation-id", LONG),
        ("mac", LONG),
        ("placement/availability-zone", LONG),
        ("services/domain", LONG),
        ("dynamic/instance-identity/document", LONG),
        ("dynamic/instance-identity/rsa2048", LONG),
        # changed through the EC2 API at runtime
        (f"{MAC}/local-ipv4s", MINUTE),
        ("tags/instance/Name", MINUTE),
        # changes on its own, and someone may be waiting for it
        ("iam/security-credentials/my-role", SECONDS),
        ("iam/info", SECONDS),
        ("identity-credentials/ec2/security-credentials/ec2-instance", SECONDS),
        ("spot/instance-action", SECONDS),
        ("events/maintenance/scheduled", SECONDS),
        ("events/recommendations/rebalance", SECONDS),
        ("autoscaling/target-lifecycle-state", SECONDS),
        # everything else
        ("local-ipv4", MINUTE),
        ("public-hostname", MINUTE),
        ("user-data", MINUTE),
        # listings are short everywhere: entries appear and disappear
        ("", SECONDS),
        ("placement/", SECONDS),
        (f"{MAC}/", SECONDS),
        ("dynamic/", SECONDS),
    ],
)
def test_default_policy_gives_each_kind_of_path_its_ttl(imds_path: str, expected: float) -> None:
    assert TtlPolicy(builtin=EC2).ttl(imds_path) == expected


def test_default_negative_ttl_is_short() -> None:
    assert TtlPolicy(builtin=EC2).negative_ttl == 2.0


def test_user_rule_beats_the_builtin_table() -> None:
    policy = TtlPolicy.from_rules(["instance-id=1", "**/=30"], builtin=EC2)
    assert policy.ttl("instance-id") == 1
    assert policy.ttl("placement/") == 30
    assert policy.ttl("ami-id") == LONG


def test_first_matching_user_rule_wins() -> None:
    policy = TtlPolicy.from_rules(["spot/*=7", "spot/**=9", "spot/instance-action=11"], builtin=EC2)
    assert policy.ttl("spot/instance-action") == 7
    assert policy.ttl("spot/") == 9  # one star needs one more segment


def test_single_star_stays_within_one_segment() -> None:
    policy = TtlPolicy.from_rules(["*=3", "tags/*=4"], builtin=EC2)
    assert policy.ttl("local-ipv4") == 3
    assert policy.ttl("user-data") == 3
    assert policy.ttl("tags/instance") == 4
    assert policy.ttl("tags/instance/Name") == MINUTE  # two segments below tags


def test_double_star_spans_any_number_of_segments_including_none() -> None:
    policy = TtlPolicy.from_rules(["network/**/local-ipv4s=1", "**=3"], builtin=EC2)
    assert policy.ttl(f"{MAC}/local-ipv4s") == 1
    assert policy.ttl("network/local-ipv4s") == 1
    assert policy.ttl(f"{MAC}/mac") == 3
    assert policy.ttl("placement/region") == 3
    assert policy.ttl("") == 3


def test_segment_patterns_are_fnmatch_and_case_sensitive() -> None:
    policy = TtlPolicy.from_rules(["ami-?d=1", "public-[ik]*=2", "Instance-ID=3"], builtin=EC2)
    assert policy.ttl("ami-id") == 1
    assert policy.ttl("public-ipv4") == 2
    assert policy.ttl("public-keys/") == 2
    assert policy.ttl("public-hostname") == MINUTE
    assert policy.ttl("instance-id") == LONG


def test_trailing_slash_pattern_matches_listings_only() -> None:
    policy = TtlPolicy.from_rules(["tags/instance/=30"], builtin=EC2)
    assert policy.ttl("tags/instance/") == 30
    assert policy.ttl("tags/instance") == MINUTE


def test_slash_alone_is_the_root_listing() -> None:
    policy = TtlPolicy.from_rules(["/=1"], builtin=EC2)
    assert policy.ttl("") == 1
    assert policy.ttl("placement/") == SECONDS


def test_leading_slash_in_a_pattern_is_ignored() -> None:
    assert TtlPolicy.from_rules(["/spot/**=1"], builtin=EC2).ttl("spot/instance-action") == 1


def test_non_meta_data_roots_are_matched_by_their_mount_path() -> None:
    policy = TtlPolicy.from_rules(["dynamic/**=1", "user-data=2"], builtin=EC2)
    assert policy.ttl("dynamic/instance-identity/document") == 1
    assert policy.ttl("user-data") == 2


def test_rule_splits_on_the_last_equals_sign_since_tag_keys_may_contain_one() -> None:
    policy = TtlPolicy.from_rules(["tags/instance/a=b=4"], builtin=EC2)
    assert policy.ttl("tags/instance/a=b") == 4


def test_default_and_negative_rules_set_those_ttls() -> None:
    policy = TtlPolicy.from_rules(["default=120", "negative=0.5", " user-data = 7 "], builtin=EC2)
    assert policy.ttl("local-ipv4") == 120
    assert policy.ttl("instance-id") == LONG  # the builtin table still applies
    assert policy.ttl("user-data") == 7
    assert policy.negative_ttl == 0.5


def test_zero_ttl_is_allowed_and_means_never_cached() -> None:
    assert TtlPolicy.from_rules(["spot/**=0"], builtin=EC2).ttl("spot/instance-action") == 0


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
        TtlPolicy.from_rules([rule], builtin=EC2)


def test_describe_lists_user_rules_then_builtins_then_default_and_negative() -> None:
    table = TtlPolicy.from_rules(["spot/**=1", "default=90"], builtin=EC2).describe()
    assert table[0] == ("spot/**", 1)
    assert table[1] == ("**/", SECONDS)
    assert ("instance-id", LONG) in table
    assert table[-2:] == [("default", 90), ("negative", 2.0)]


def test_describe_round_trips_through_from_rules() -> None:
    policy = TtlPolicy.from_rules(
        ["spot/**=1", "tags/*/=9", "default=90", "negative=3"], builtin=EC2
    )
    # the description holds the built-in rules too: no builtin= needed to get them back
    again = TtlPolicy.from_rules(f"{pattern}={seconds}" for pattern, seconds in policy.describe())
    paths = ["spot/", "tags/instance/", "user-data", "mac"]
    assert [again.ttl(p) for p in paths] == [policy.ttl(p) for p in paths]
    assert again.negative_ttl == policy.negative_ttl
