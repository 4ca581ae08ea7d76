using Microsoft.Extensions.Configuration;

namespace AttributionFleet.Worker.Hosting;

public static class FleetConfiguration
{
    /// <summary>Adds a JSON configuration file (e.g. from <c>FLEET_CONFIG</c> or <c>--config</c>) when one is named.</summary>
    public static IConfigurationBuilder AddFleetConfigFile(this IConfigurationBuilder builder, string? path)
    {
        if (string.IsNullOrWhiteSpace(path)) return builder;
        if (!File.Exists(path)) throw new FileNotFoundException($"configuration file not found: {path}", path);
        return builder.AddJsonFile(Path.GetFullPath(path), optional: false, reloadOnChange: false);
    }
}
