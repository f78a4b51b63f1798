/** A simulated fleet: sites → gateways → dataloggers → sensors, named deterministically. */

export interface SimSensor {
  id: string;
  name: string;
  kind: string;
  unit: string;
  /** Mean and amplitude of the simulated signal. */
  base: number;
  amplitude: number;
}

export interface SimDatalogger {
  id: string;
  model: string;
  serial: string;
  intervalS: number;
  sensors: SimSensor[];
}

export interface SimGateway {
  site: string;
  id: string;
  firmware: string;
  dataloggers: SimDatalogger[];
}

const SENSOR_TYPES: Omit<SimSensor, 'id'>[] = [
  { name: 'Air temperature', kind: 'temperature', unit: '°C', base: 18, amplitude: 6 },
  { name: 'Relative humidity', kind: 'humidity', unit: '%', base: 60, amplitude: 20 },
  { name: 'Pressure', kind: 'pressure', unit: 'hPa', base: 1013, amplitude: 8 },
  { name: 'Wind speed', kind: 'wind_speed', unit: 'm/s', base: 4, amplitude: 4 },
  { name: 'Soil moisture', kind: 'soil_moisture', unit: '%', base: 30, amplitude: 10 },
  { name: 'Battery voltage', kind: 'voltage', unit: 'V', base: 12.6, amplitude: 0.4 },
];
const SENSOR_IDS = ['t_air', 'rh', 'p_atm', 'wind', 'soil', 'v_bat'];

export function buildFleet(options: {
  sites: string[];
  gateways: number;
  dataloggers: number;
  sensors: number;
  intervalS: number;
}): SimGateway[] {
  const fleet: SimGateway[] = [];
  for (const site of options.sites) {
    for (let g = 1; g <= options.gateways; g++) {
      const dataloggers: SimDatalogger[] = [];
      for (let d = 1; d <= options.dataloggers; d++) {
        const sensors: SimSensor[] = [];
        for (let s = 0; s < options.sensors; s++) {
          const type = SENSOR_TYPES[s % SENSOR_TYPES.length]!;
          const suffix = s >= SENSOR_IDS.length ? `_${Math.floor(s / SENSOR_IDS.length) + 1}` : '';
          sensors.push({ ...type, id: `${SENSOR_IDS[s % SENSOR_IDS.length]}${suffix}` });
        }
        dataloggers.push({
          id: `dl-${d}`,
          model: 'DL-400',
          serial: `DL4-${g}${String(d).padStart(4, '0')}`,
          intervalS: options.intervalS,
          sensors,
        });
      }
      fleet.push({ site, id: `gw-${g}`, firmware: '2.4.1', dataloggers });
    }
  }
  return fleet;
}

/** A plausible value: a slow daily-ish wave plus noise. */
export function sampleValue(sensor: SimSensor, at: Date): number {
  const phase = (at.getTime() / 3_600_000) * (Math.PI / 12);
  const value = sensor.base + sensor.amplitude * Math.sin(phase) + (Math.random() - 0.5) * sensor.amplitude * 0.1;
  return Math.round(value * 100) / 100;
}

export const topics = {
  status: (gw: SimGateway) => `${gw.site}/gateway/${gw.id}/status`,
  info: (gw: SimGateway, dl: SimDatalogger) => `${gw.site}/gateway/${gw.id}/datalogger/${dl.id}/info`,
  data: (gw: SimGateway, dl: SimDatalogger) => `${gw.site}/gateway/${gw.id}/datalogger/${dl.id}/data`,
};
