using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli;

/// <summary>Turns --model into a model folder: none (or "sentiment-minilm") is the embedded default model.</summary>
public static class ModelResolver
{
    public static string Resolve(string? model) => DefaultModel.IsDefault(model) ? DefaultModel.EnsureFolder() : AttributionFleet.Engine.Checkpoints.CheckpointFolder.Resolve(model!);
}
