namespace AttributionFleet.Engine;

/// <summary>
/// A model folder, checkpoint or tokenizer that cannot be loaded. The message names the file and,
/// where there is one, the key or field at fault; <see cref="Path"/> and <see cref="Field"/> carry them.
/// </summary>
public sealed class ModelLoadException : Exception
{
    public string? Path { get; }
    public string? Field { get; }

    public ModelLoadException(string message, string? path = null, string? field = null, Exception? inner = null)
        : base(message, inner)
    {
        Path = path;
        Field = field;
    }
}
