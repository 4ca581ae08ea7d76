namespace AttributionFleet.Engine;

/// <summary>An engine setting from the environment with a value the engine does not know; the message names the variable.</summary>
public sealed class EngineSettingException(string variable, string message) : Exception(message)
{
    public string Variable { get; } = variable;
}
