namespace AttributionFleet.Cli;

/// <summary>Turns --model into a model folder.</summary>
public static class ModelResolver
{
    public static string Resolve(string? model)
    {
        if (model is null) throw new UsageException("--model DIR is required");
        return model;
    }
}
