using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Hosting;

// An attribution worker: configuration from appsettings.json, environment (Worker__Transport=RabbitMq,
// RabbitMq__Password=…, Models__tiny__Path=…) and the command line (--Worker:Transport=RabbitMq).
// Under tcmalloc when it is installed (same process, re-executed with it preloaded): see NativeAllocator.
AttributionFleet.Engine.NativeAllocator.PreloadOrContinue();
var builder = Host.CreateApplicationBuilder(args);
builder.Configuration.AddFleetConfigFile(Environment.GetEnvironmentVariable("FLEET_CONFIG"));
try
{
    builder.Services.AddAttributionFleet(builder.Configuration);
}
catch (FleetConfigurationException e)
{
    Console.Error.WriteLine($"attribution worker: {e.Message}");
    return 2;
}
await builder.Build().RunAsync();
return 0;
