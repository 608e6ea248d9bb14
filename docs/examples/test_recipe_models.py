"""``GET /v1/models`` lists the emulator's catalogue."""


def test_models_list_the_catalogue(batch_emulator, batch_emulator_openai):
    names = {model.id for model in batch_emulator_openai.models.list()}
    assert "gpt-4o-mini" in names
    assert "text-embedding-3-small" in names
    assert names == set().union(*batch_emulator.models.values())
    assert batch_emulator_openai.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
