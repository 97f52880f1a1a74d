"""Response shapes of the health endpoints (for the schema)."""

from rest_framework import serializers


class LiveSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class CheckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "error"])
    latency_ms = serializers.FloatField()
    error = serializers.CharField(required=False)


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    checks = serializers.DictField(child=CheckSerializer())


class WorkersSerializer(CheckSerializer):
    online = serializers.IntegerField(required=False)
    names = serializers.ListField(child=serializers.CharField(), required=False)


class QueuesSerializer(CheckSerializer):
    depths = serializers.DictField(child=serializers.IntegerField(), required=False)


class BeatSerializer(CheckSerializer):
    last_heartbeat_at = serializers.DateTimeField(allow_null=True, required=False)
    age_seconds = serializers.FloatField(allow_null=True, required=False)


class MigrationsSerializer(CheckSerializer):
    pending = serializers.ListField(child=serializers.CharField(), required=False)


class HealthDetailSerializer(ReadinessSerializer):
    version = serializers.CharField()
    workers = WorkersSerializer()
    queues = QueuesSerializer()
    beat = BeatSerializer()
    migrations = MigrationsSerializer()
