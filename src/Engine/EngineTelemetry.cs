using System.Diagnostics;

namespace AttributionFleet.Engine;

/// <summary>
/// The engine's traces: spans <c>engine.tokenize</c>, <c>engine.attribute</c> (one per length bucket) and, for
/// DeepLift, <c>engine.forward</c> / <c>engine.backward</c>. They nest under whatever span is current (a worker's
/// consume span). Costs nothing unless a listener (OpenTelemetry <c>AddSource(EngineTelemetry.SourceName)</c>) samples them.
/// </summary>
public static class EngineTelemetry
{
    public const string SourceName = "AttributionFleet.Engine";

    public static readonly ActivitySource Source = new(SourceName, typeof(EngineTelemetry).Assembly.GetName().Version?.ToString());
}
