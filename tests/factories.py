"""factory_boy factories for the models the tests need."""

import factory
from django.contrib.auth import get_user_model


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class StaffUserFactory(UserFactory):
    is_staff = True


class TaskFactory(factory.django.DjangoModelFactory):
    """A task row as the API would have written it; no Celery message is sent."""

    class Meta:
        model = "tasks.Task"

    owner = factory.SubFactory(UserFactory)
    type = "diagnostics.sleep"
    params = factory.LazyFunction(lambda: {"seconds": 1})
    celery_task_id = factory.Faker("uuid4")
    request_fingerprint = "-"


class InteractionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ai_interactions.AIInteraction"

    owner = factory.SubFactory(UserFactory)
    status = "succeeded"
    mode = "sync"
    provider = "echo"
    model = "echo-1"
    messages = factory.LazyFunction(lambda: [{"role": "user", "content": "hello"}])
    prompt = "hello"
    prompt_hash = "-"
    response = "Echo: hello"
